"""`python -m gateway` is the same as the `tiktok-gateway` console script."""

from gateway.cli.main import main

if __name__ == "__main__":  # the delivery process (spawn) imports this module as well
    raise SystemExit(main())
