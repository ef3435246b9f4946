from lorarank.cli import main

raise SystemExit(main())
