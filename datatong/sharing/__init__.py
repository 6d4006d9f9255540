"""Sharing rules as software (issue 4): applications, grants, usage control, masking,
working-day deadlines and supply–demand docking (国发〔2016〕51号, articles 14–17)."""
