"""The installed package's version, which the OpenAPI document and webhook User-Agent name.

Read from the package metadata rather than from ``stepstone.__version__``: importing the
package root loads the Engine, and the modules that need the version sit below it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("stepstone")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    VERSION = "0+unknown"
