"""The DICOM node behind ``ct-denoise serve``: a persistent spool and queue
(:mod:`~denoise.node.spool`), a pynetdicom Storage SCP (:mod:`~denoise.node.scp`)
and C-STORE forwarding (:mod:`~denoise.node.forward`)."""
