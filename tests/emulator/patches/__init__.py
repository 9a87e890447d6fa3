"""Corrections that make moto behave like AWS where skiff's tests depend on it.

Each module patches one service and documents, rule by rule, the AWS behaviour
it restores. They are applied when this package is imported.
"""

from . import ebs

ebs.apply()

from . import volumes

volumes.apply()

from . import ssm

ssm.apply()

# Last, so its gate wraps the others: they see the path without /skiff/vpce/<id>.
from . import vpce

vpce.apply()
