"""The web page (``demo.py``): upload dermoscopy images, see the model's probabilities and Grad-CAM."""
