#!/usr/bin/env bash
# `make demo`: the main job on built-in synthetic data: four teachers distilled into a DNN student
# (configs/demo.yaml). Finished steps are reused, so running it again is quick; runs whose settings
# changed since (a new demo.yaml) start over, with the students of retrained teachers.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/mtkd run configs/demo.yaml --rerun-changed
