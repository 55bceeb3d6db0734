"""The model: the Elman network (``elman``), its activations and initialisations (one table
each: ``activations``, ``inits``) and the backends that run its recursions (``backends``).

Importing this package imports nothing else: ``activations`` and ``inits`` stay torch-free.
"""
