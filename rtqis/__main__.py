from rtqis.cli import main

raise SystemExit(main())
