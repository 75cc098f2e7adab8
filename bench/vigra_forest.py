"""vigra's own random forest, ilastik's forest engine, on one thread: run under an interpreter that has vigra.

    python3 vigra_forest.py PROJECT.ilp FEATURES.npy PROBABILITIES.npy GROUP [GROUP ...]

Reads the project's forests (vigra `RandomForest` from each HDF5 group), predicts the (n, F) float32
features, combines the forests as ilastik does (Σ probs_f · trees_f / total trees, float32), saves the
probabilities and prints the CPU seconds of the predictions as JSON. Imports nothing from hpc_ilastik.
"""

import json
import sys
import time

import numpy as np
import vigra


def main() -> int:
    project, features, output, groups = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    X = np.load(features)
    forests = [vigra.learning.RandomForest(project, group) for group in groups]
    start = time.process_time()
    probs = [forest.predictProbabilities(X) for forest in forests]
    seconds = time.process_time() - start
    trees = [np.float32(forest.treeCount()) for forest in forests]
    combined = sum(p * t for p, t in zip(probs, trees)) / np.float32(sum(trees))
    np.save(output, combined.astype(np.float32))
    print(json.dumps({"cpu_s": seconds, "vigra": vigra.version}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
