"""Stacking: fold models' out-of-fold image scores, tabular and patient-relative features, gradient-boosted trees."""
