from guidance_tui.cli import main

raise SystemExit(main())
