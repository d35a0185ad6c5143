from coordinator.cluster.cli import main

raise SystemExit(main())
