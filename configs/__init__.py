"""Config files for `python -m rs.main --config=configs/NAME.py`; see base.py."""
