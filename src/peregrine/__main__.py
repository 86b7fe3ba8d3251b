from peregrine.cli import main

raise SystemExit(main())
