"""Training code.  GBM training needs lightgbm/xgboost/scikit-learn; neural training
needs torch + timm.  Nothing here is imported when the plugin runs detection."""
