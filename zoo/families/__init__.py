"""Model families, one module each; importing this package registers every one of them.

Every module in this folder is imported, so a new family is one new file here (plus its
preset in configs/): nothing else names it. See zoo/registry.py for what a family registers
and README.md ("Add your own family") for a worked example (parallel.py).
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")
