"""Who may do what: tokens and console sessions."""
