"""Inspection: proposals and segments of a few images, statistics and evaluation against annotations.

One module per role, each behind a ``regionshards`` command (submodules are imported on use, so importing this
package does not load matplotlib):

* ``preview`` — segments and proposals of image files before a build (``regionshards proposals``);
* ``stats`` — counts and distributions of a built dataset in one streaming pass (``regionshards stats``), with
  ``sketch`` (fixed-memory distributions) and ``dataset`` (reading samples, finding keys, drawing samples);
* ``plots`` — PNG histograms of those distributions (``regionshards plot``);
* ``overlay`` — pictures of samples: segments and boxes (``regionshards show``);
* ``evaluate`` — box recall, ABO and best mask IoU against COCO annotations (``regionshards eval``);
* ``html`` — one self-contained HTML page of all of it (``regionshards report``).

No torch and no Ray here.
"""
