"""Who may ask for what and what it cost: caller policies and budgets, spend and savings, capture for retraining."""
