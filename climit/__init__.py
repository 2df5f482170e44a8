"""climit: does a frozen imitator of a continual learner learn in context as the learner does?"""

__version__ = "0.1.0"
