"""Command-line tools that regenerate the files shipped with the package."""
