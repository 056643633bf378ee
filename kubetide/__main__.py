from kubetide.cli import main

raise SystemExit(main())
