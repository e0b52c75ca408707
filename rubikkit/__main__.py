from rubikkit.cli import main

raise SystemExit(main())
