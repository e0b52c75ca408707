# Sourced by device_run.sh and device_lanes.sh (from the repository root).
#
# check_data CONFIG DATA_ROOT: exit 2, naming the dataset, when CONFIG reads a dataset other than
# the phantoms that is missing under DATA_ROOT; otherwise every run of the grid would fail, each
# only after the lease's install, tests and benchmarks.
check_data() {
  local cfg=$1 data=$2 spec need
  for spec in $(sed -n 's/.*"data": *"\([^"]*\)".*/\1/p' "$cfg"); do
    case "$spec" in
      phantoms:* | *:/* | *:~*) continue ;;
      medmnist3d:*) need=$data/medmnist3d ;;
      *) need=$data/${spec#*:} ;;
    esac
    [ -e "$need" ] || {
      echo "DATA: $cfg reads $spec from $need, which is missing (make device-data, carry .device_data)" >&2
      exit 2
    }
  done
}
