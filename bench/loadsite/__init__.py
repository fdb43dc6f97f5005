"""The site ``bench/load.py`` serves with gunicorn: the example project plus two comparison
views. Kept out of ``example_project/`` so the demo stays a demo."""
