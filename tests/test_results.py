"""Experiment records, summaries and tables (rubikkit.results)."""

import json
import math

import pytest

from rubikkit import results


def _rec(seed, acc, method="scratch", lf=1.0, **kw):
    rec = {
        "dataset": "medmnist3d:adrenal",
        "method": method,
        "backbone": "resnet18",
        "head": "classify",
        "label_fraction": lf,
        "seed": seed,
        "split": "test",
        "metrics": {"acc": acc, "auc": acc + 0.1},
        "epochs": 3,
        "commit": "abc",
        "device": "cpu",
        "wall_s": 1.0,
    }
    rec.update(kw)
    return rec


def test_append_and_load_roundtrip(tmp_path):
    path = tmp_path / "results" / "adrenal.jsonl"
    for s, a in enumerate([0.7, 0.8, 0.9]):
        results.append_record(path, _rec(s, a))
    recs = results.load_records(tmp_path / "results")
    assert [r["seed"] for r in recs] == [0, 1, 2]
    assert all(r["experiment"] == "adrenal" for r in recs)


def test_summary_mean_and_sample_sd():
    rows = results.summarise([_rec(0, 0.7), _rec(1, 0.8), _rec(2, 0.9)])
    (row,) = rows
    assert row["n"] == 3 and row["seeds"] == [0, 1, 2]
    assert row["metrics"]["acc"]["mean"] == pytest.approx(0.8)
    assert row["metrics"]["acc"]["sd"] == pytest.approx(0.1)  # sample sd, n - 1
    single = results.summarise([_rec(0, 0.7)])[0]["metrics"]["acc"]
    assert math.isnan(single["sd"])


def test_table_marks_published_and_leaves_missing_cells_missing():
    recs = [_rec(0, 0.7), _rec(1, 0.8), _rec(0, 0.75, method="rubik", lf=0.1)]
    table = results.markdown_table(recs, "medmnist3d:adrenal", ["acc", "auc"], columns=[0.1, 1.0])
    lines = table.splitlines()
    scratch = next(line for line in lines if line.startswith("| scratch |"))
    rubik = next(line for line in lines if line.startswith("| rubik |"))
    # scratch has no run at 10 % of the labels, rubik none at 100 %: those cells stay missing
    assert scratch.count(results.MISSING) == 2 and "0.750 ± 0.071 (n=2)" in scratch
    assert rubik.count(results.MISSING) == 2 and "0.750 (n=1)" in rubik
    published = [line for line in lines if "published" in line]
    assert published and "0.721" in published[0] and "0.827" in published[0]


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("method", "magic", "method"),
        ("metrics", {}, "metrics"),
        ("metrics", {"acc": float("nan")}, "acc"),
        ("label_fraction", 1.5, "label_fraction"),
        ("variant", 3, "variant must be a name or null"),
    ],
)
def test_bad_records_are_rejected(tmp_path, field, value, match):
    rec = _rec(0, 0.7)
    rec[field] = value
    with pytest.raises(ValueError, match=match):
        results.append_record(tmp_path / "x.jsonl", rec)
    assert not (tmp_path / "x.jsonl").exists()


def test_missing_field_and_malformed_line_name_the_problem(tmp_path):
    rec = _rec(0, 0.7)
    del rec["commit"]
    with pytest.raises(ValueError, match="commit"):
        results.validate_record(rec)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_rec(0, 0.7)) + "\n{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        results.load_records(bad)


def test_plot_label_fractions_draws_one_line_per_setting():
    import matplotlib

    matplotlib.use("Agg")
    recs = [
        _rec(s, 0.6 + 0.1 * lf, method=m, lf=lf)
        for s in (0, 1)
        for m in ("scratch", "rubik")
        for lf in (0.1, 1.0)
    ]
    ax = results.plot_label_fractions(recs, "medmnist3d:adrenal", "acc")
    legend = sorted(t.get_text() for t in ax.get_legend().get_texts())
    assert legend == ["rubik (resnet18, classify)", "scratch (resnet18, classify)"]
    assert ax.get_xscale() == "log"


def test_plot_label_fractions_joins_rows_named_alike_and_refuses_overlaps():
    import matplotlib

    matplotlib.use("Agg")
    # One pre-training fine-tuned by two experiments, under a variant name in one of them.
    recs = [_rec(s, 0.6, method="rubik", lf=0.01) for s in (0, 1)]
    recs += [_rec(s, 0.7 + 0.1 * s, method="rubik", lf=0.1, variant="epochs=30") for s in (0, 1)]
    recs += [_rec(s, 0.5, lf=lf) for s in (0, 1) for lf in (0.01, 0.1)]
    ax = results.plot_label_fractions(
        recs, "medmnist3d:adrenal", "acc", label_by=lambda r: r["method"]
    )
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar: (data, caps, bars)
    assert sorted(lines) == ["rubik", "scratch"]
    x, y = lines["rubik"].get_data()
    assert list(x) == [0.01, 0.1] and list(y) == pytest.approx([0.6, 0.75])
    with pytest.raises(ValueError, match="label_by: line 'all'"):
        results.plot_label_fractions(recs, "medmnist3d:adrenal", "acc", label_by=lambda r: "all")


def test_one_pretraining_follows_the_anchor_digest_across_grids():
    def run(exp, method, digest=None, variant=None, head="classify"):
        return _rec(
            0, 0.7, method=method, experiment=exp, init_digest=digest, variant=variant, head=head
        )

    recs = [
        run("a", "scratch"),
        run("a", "rubik", "d1"),
        run("a", "rubik", "d2", variant="centred"),  # another pre-training of the anchor grid
        run("a", "rubik", "d1", head="proxy"),
        run("b", "scratch"),
        run("b", "rubik", "d1", variant="epochs=30"),  # the same weights under a variant name
        run("b", "rubik", "d3"),  # re-trained with other weights
        run("c", "rubik", "d1"),  # a grid not asked for
    ]
    got = results.one_pretraining(recs, ("a", "b"), anchor="a")
    assert [(r["experiment"], r["method"], r["init_digest"]) for r in got] == [
        ("a", "scratch", None),
        ("a", "rubik", "d1"),
        ("b", "scratch", None),
        ("b", "rubik", "d1"),
    ]
    assert [r["method"] for r in results.one_pretraining(recs, ("b",), anchor="b")] == [
        "scratch",
        "rubik",
    ]
    assert all(r["method"] == "scratch" for r in results.one_pretraining(recs, ("a",), "c"))


def _collapsed(seed, acc, method, share):
    rec = _rec(seed, acc, method=method, lf=0.1)
    rec["metrics"]["top_share"] = share
    return rec


def test_seed_table_pairs_seeds_marks_collapse_and_leaves_gaps():
    recs = [
        _collapsed(0, 0.7, "scratch", 0.6),
        _collapsed(1, 0.8, "scratch", 0.97),
        _collapsed(0, 0.6, "rubik", 0.5),
        _collapsed(2, 0.9, "tcpc", 0.5),
        _collapsed(0, 0.65, "rubik", 0.5) | {"variant": "n_perms=10"},
    ]
    lines = results.seed_table(recs, "acc").splitlines()
    assert lines[0] == "| seed | scratch | rubik | rubik [n_perms=10] | tcpc |"
    assert lines[2] == "| 0 | 0.700 | 0.600 | 0.650 | – |"
    assert lines[3] == f"| 1 | 0.800* | {results.MISSING} | {results.MISSING} | {results.MISSING} |"
    assert lines[4] == f"| 2 | {results.MISSING} | {results.MISSING} | {results.MISSING} | 0.900 |"
    assert lines[5].startswith("| mean ± sd | 0.750 ± 0.071 (n=2) | 0.600 (n=1) |")
    assert "top_share ≥ 0.95" in lines[-1] and "not checked" not in lines[-1]
    # A record without the flag metric cannot be checked, and the table says so.
    old = _rec(3, 0.768, method="scratch", lf=0.1)
    assert "Records of scratch lack top_share" in results.seed_table(recs + [old], "acc")
    # flag=None (a segmenter's records): nothing marked, no note about the missing flag
    plain = results.seed_table(recs + [old], "acc", flag=None)
    assert "*" not in plain and "top_share" not in plain
    gap = results.MISSING
    assert plain.splitlines()[3] == f"| 1 | 0.800 | {gap} | {gap} | {gap} |"


@pytest.mark.parametrize(
    "recs, metric, match",
    [
        ([], "acc", "records: expected at least one"),
        ([_rec(0, 0.7), _rec(1, 0.7, lf=0.1)], "acc", "records: expected one setting"),
        ([_rec(0, 0.7), _rec(0, 0.8)], "acc", "two records for seed 0 of scratch"),
        ([_rec(0, 0.7)], "miou", "metric: no record has 'miou'"),
    ],
)
def test_seed_table_errors_name_the_argument(recs, metric, match):
    with pytest.raises(ValueError, match=match):
        results.seed_table(recs, metric)


def _append_unique(path, record):
    results.append_record(path, record, unique_by=("run", "config_hash"))


def test_append_unique_keeps_one_record_per_run(tmp_path):
    import multiprocessing

    path = tmp_path / "r.jsonl"
    rec = dict(_rec(0, 0.8), run="s0/pt-rubik/proxy-test", config_hash="abc")
    assert results.append_record(path, rec, unique_by=("run", "config_hash")) is True
    assert results.append_record(path, rec, unique_by=("run", "config_hash")) is False
    other = dict(rec, config_hash="def")  # other settings of the same run folder: a new record
    assert results.append_record(path, other, unique_by=("run", "config_hash")) is True
    assert results.append_record(path, rec) is True  # without unique_by nothing is checked
    assert len(results.load_records(path)) == 3
    # Drivers that finish the same run at once leave one record between them.
    path = tmp_path / "race.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_unique, args=(path, rec)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * 4
    assert len(results.load_records(path)) == 1


def test_transfer_depths_reads_each_depth_against_scratch_seed_by_seed():
    import matplotlib

    matplotlib.use("Agg")

    def run(seed, acc, method="rubik", variant=None, n=None):
        extra = {} if n is None else {"transfer_stages": n}
        return _rec(seed, acc, method=method, variant=variant, **extra)

    recs = [run(s, v, method="scratch") for s, v in enumerate([0.50, 0.60, 0.70])]
    recs += [run(s, v) for s, v in enumerate([0.40, 0.52, 0.58])]  # full: -0.10, -0.08, -0.12
    recs += [run(s, v, n=2) for s, v in enumerate([0.55, 0.61, 0.69])]  # +0.05, +0.01, -0.01
    recs += [run(s, 0.5, variant="epochs=100", n=1) for s in (0, 1)]  # seed 2 not run
    recs += [_rec(0, 0.9, method="rubik", head="proxy")]  # no fine-tuning: left out
    rows = results.transfer_depths(recs, "acc", n_stages=5)
    got = [(r["label"], r["depth"], r["n"], r["paired_n"], r["wins"]) for r in rows]
    assert got == [
        ("rubik", 0, 3, 3, 0),
        ("rubik", 2, 3, 3, 2),
        ("rubik", 5, 3, 3, 0),
        ("rubik [epochs=100]", 0, 3, 3, 0),
        ("rubik [epochs=100]", 1, 2, 2, 0),  # a tie is no win
    ]
    assert rows[1]["paired_mean"] == pytest.approx(0.05 / 3)
    assert rows[2]["paired_mean"] == pytest.approx(-0.10) and rows[2]["paired_sd"] == (
        pytest.approx(0.02)
    )
    assert rows[2]["mean"] == pytest.approx(0.5) and rows[0]["mean"] == pytest.approx(0.6)
    table = results.transfer_depth_table(rows).splitlines()
    assert table[0] == "| pre-training | 0 stages | 1 stage | 2 stages | 5 stages |"
    assert table[2] == (
        "| rubik | 0.600 (scratch) | – | 0.617 (+0.017 ± 0.031, 2 of 3) | "
        "0.500 (-0.100 ± 0.020, 0 of 3) |"
    )
    assert table[3].startswith("| rubik [epochs=100] | 0.600 (scratch) | 0.500 (-0.050 ± 0.071")
    ax = results.plot_transfer_depths(rows, "acc")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["rubik", "rubik [epochs=100]"]
    # one record per (pre-training, depth, seed), depths within the backbone, scratch present
    with pytest.raises(ValueError, match="two records for seed 0 of scratch at depth 0"):
        results.transfer_depths(recs + [run(0, 0.5, method="scratch")], "acc", 5)
    with pytest.raises(ValueError, match="n_stages: a record transferred 5 stages, more than 4"):
        results.transfer_depths(recs + [run(0, 0.5, n=5)], "acc", 4)
    with pytest.raises(ValueError, match="no scratch record with 'acc'"):
        results.transfer_depths(recs[3:], "acc", 5)
    with pytest.raises(ValueError, match="expected one setting"):
        results.transfer_depths(recs + [_rec(5, 0.5, lf=0.1)], "acc", 5)


def test_transfer_depths_keeps_apart_the_weights_behind_one_variant_name():
    # The same pre-training settings trained on two machines: two sets of weights, two curves.
    def run(seed, acc, digest, n=None):
        extra = {"init_digest": digest, **({} if n is None else {"transfer_stages": n})}
        return _rec(seed, acc, method="rubik", variant="epochs=100", **extra)

    recs = [_rec(s, v, method="scratch") for s, v in enumerate([0.50, 0.60])]
    recs += [run(s, v, "aaaa1111bbbb") for s, v in enumerate([0.40, 0.50])]  # full, machine 1
    recs += [run(s, v, "cccc2222dddd", n=3) for s, v in enumerate([0.55, 0.65])]  # machine 2
    # the curves in the order the records first name their weights, not by digest
    rows = results.transfer_depths(recs[:2] + recs[4:] + recs[2:4], "acc", n_stages=5)
    assert [r["label"] for r in rows][::2] == [
        "rubik [epochs=100] @cccc2222",
        "rubik [epochs=100] @aaaa1111",
    ]
    rows = results.transfer_depths(recs, "acc", n_stages=5)
    got = [(r["label"], r["init_digest"], r["depth"], r["n"]) for r in rows]
    assert got == [
        ("rubik [epochs=100] @aaaa1111", "aaaa1111bbbb", 0, 2),
        ("rubik [epochs=100] @aaaa1111", "aaaa1111bbbb", 5, 2),
        ("rubik [epochs=100] @cccc2222", "cccc2222dddd", 0, 2),
        ("rubik [epochs=100] @cccc2222", "cccc2222dddd", 3, 2),
    ]
    assert rows[3]["paired_mean"] == pytest.approx(0.05)
    # one set of weights keeps the plain label, and a repeated seed is still an error
    one = results.transfer_depths(recs[:4], "acc", n_stages=5)
    assert {(r["label"], r["init_digest"]) for r in one} == {("rubik [epochs=100]", None)}
    with pytest.raises(ValueError, match="two records for seed 0 of rubik"):
        results.transfer_depths(recs + [run(0, 0.5, "cccc2222dddd", n=3)], "acc", 5)
    # a record that names no weights, beside ones that do, is a curve of its own, listed last
    older = [run(s, 0.5, None, n=1) for s in (0, 1)]
    labels = [r["label"] for r in results.transfer_depths(recs + older, "acc", 5)][::2]
    assert labels[-1] == "rubik [epochs=100] @unknown weights" and len(labels) == 3


def test_transfer_depths_reads_each_machines_runs_against_its_own_scratch():
    # Scratch run on two machines: a seed pairs runs of one machine, so each curve takes its own.
    xeon = "cpu: Intel(R) Xeon(R) Processor, 2 cores, 1 torch thread; torch 2.13.0+cpu"
    epyc = "cpu: AMD EPYC, 2 cores, 1 torch thread; torch 2.13.0+cpu"

    def run(seed, acc, variant, device, n=None, method="rubik"):
        extra = {} if n is None else {"transfer_stages": n}
        return _rec(seed, acc, method=method, variant=variant, device=device, **extra)

    recs = [run(s, v, None, xeon, method="scratch") for s, v in enumerate([0.50, 0.60])]
    recs += [run(s, v, None, epyc, method="scratch") for s, v in enumerate([0.70, 0.62])]
    recs += [run(s, v, "epochs=100", xeon, n=3) for s, v in enumerate([0.45, 0.55])]
    recs += [run(s, v, "epochs=100,seed=2", epyc, n=3) for s, v in enumerate([0.60, 0.60])]
    rows = results.transfer_depths(recs, "acc", n_stages=5)
    got = [(r["label"], r["depth"], r["scratch_device"], r["wins"]) for r in rows]
    assert got == [
        ("rubik [epochs=100]", 0, xeon, 0),
        ("rubik [epochs=100]", 3, xeon, 0),
        ("rubik [epochs=100,seed=2]", 0, epyc, 0),
        ("rubik [epochs=100,seed=2]", 3, epyc, 0),
    ]
    # each against its own machine: -0.05 on the Xeon, -0.06 on the EPYC (against the Xeon's
    # scratch it would have read +0.05)
    assert rows[1]["paired_mean"] == pytest.approx(-0.05)
    assert rows[3]["paired_mean"] == pytest.approx(-0.06) and rows[2]["mean"] == pytest.approx(0.66)
    table = results.transfer_depth_table(rows).splitlines()
    assert table[2].startswith("| rubik [epochs=100] | 0.550 (scratch, Intel Xeon Processor) |")
    assert table[3].startswith("| rubik [epochs=100,seed=2] | 0.660 (scratch, AMD EPYC) |")
    # with one machine's scratch every curve reads against it, and the table does not name it
    one = results.transfer_depths(recs[:2] + recs[4:], "acc", n_stages=5)
    assert {r["scratch_device"] for r in one} == {xeon}
    assert one[3]["paired_mean"] == pytest.approx(0.05)
    assert "(scratch) |" in results.transfer_depth_table(one)
    assert results.machine_name(epyc) == "AMD EPYC" and results.machine_name(None) == (
        "unknown machine"
    )
    # a curve from a machine without scratch, or from two machines, has nothing to pair with
    other = [run(s, 0.5, "seed=1", "cpu: other", n=2) for s in (0, 1)]
    with pytest.raises(ValueError, match=r"rubik \[seed=1\] ran on 'cpu: other', where no scratch"):
        results.transfer_depths(recs + other, "acc", 5)
    mixed = [run(0, 0.5, "seed=1", xeon, n=2), run(1, 0.5, "seed=1", epyc, n=2)]
    with pytest.raises(
        ValueError, match=r"rubik \[seed=1\] ran on 'cpu: AMD EPYC, .*' and 'cpu: Intel"
    ):
        results.transfer_depths(recs + mixed, "acc", 5)
    # a record written before "1 torch thread" lost its plural names the same machine
    older = [
        run(s, v, "seed=1", epyc.replace("thread;", "threads;"), n=2)
        for s, v in enumerate([0.6, 0.6])
    ]
    assert results.transfer_depths(recs + older, "acc", 5)[-1]["scratch_device"] == epyc
    # two scratch runs of one seed on one machine are still an error
    with pytest.raises(ValueError, match="two records for seed 0 of scratch at depth 0 on one"):
        results.transfer_depths(recs + [run(0, 0.5, None, epyc, method="scratch")], "acc", 5)
