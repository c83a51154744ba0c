from culturegan.cli import main

raise SystemExit(main())
