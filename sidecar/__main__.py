"""`python -m sidecar` runs the same CLI as `convostore`."""

from .cli import main

main()
