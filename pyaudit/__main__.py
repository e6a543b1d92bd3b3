from pyaudit.cli import main

raise SystemExit(main())
