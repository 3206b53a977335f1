# The two commands of the README. Both create and use .venv/ in the repository root.
.PHONY: run test bench clean

run:            ## the main job: ANI-1x on aspirin: energy table, optimization, 1 ps NVT at 300 K, trajectory, plot, summary
	@scripts/setup.sh
	@.venv/bin/phai demo

test:           ## the test suite (what CI runs)
	@scripts/setup.sh test
	@.venv/bin/python -m pytest tests

bench:          ## speed and memory against TorchANI, printed as ratios
	@scripts/setup.sh test
	@.venv/bin/python benchmarks/ani_speed.py

clean:
	rm -rf .venv .pytest_cache
