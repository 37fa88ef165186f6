"""`ray job submit ... -- python jobs/generate.py --config configs/zoo/quickstart.yaml --out DIR`

Thin entrypoint: parse, then call the library. Under `ray job submit` the job's
environment names the cluster (RAY_ADDRESS), so `ray.init()` inside the runner
connects to the cluster the job was submitted to instead of starting a new one.
A rerun with the same --out resumes from the manifest.
"""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
