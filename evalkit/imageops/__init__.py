"""Image operations shared by the run (building a task's inputs) and the metrics (checking outputs against them):
seeded inpainting masks (:mod:`.masks`) and control detectors (:mod:`.detectors`: canny, lowres, gray).

Pure numpy/OpenCV/Pillow on uint8 arrays, no network: it sits at the bottom of the layers, beside ``imagefiles``.
"""
