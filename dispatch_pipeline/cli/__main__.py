import sys

from dispatch_pipeline.cli import main

sys.exit(main())
