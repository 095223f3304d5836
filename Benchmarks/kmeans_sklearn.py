"""scikit-learn's KMeans on the same tensor as `silo bench kmeans` (pip install scikit-learn==1.7.2).

k-means++ (sklearn's greedy variant), one init, exactly ITERATIONS Lloyd iterations (tol=0), 2 threads.
    python Benchmarks/kmeans_sklearn.py FILE.safetensors NAME K ITERATIONS SEED
Prints {"seconds": ..., "inertia": ...}; seconds exclude loading.
"""
import json, os, sys, time
os.environ.setdefault("OMP_NUM_THREADS", "2")
from safetensors.numpy import load_file
from sklearn.cluster import KMeans

path, name, k, iterations, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
x = load_file(path)[name]
start = time.perf_counter()
km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=iterations, tol=0, algorithm="lloyd", random_state=seed).fit(x)
print(json.dumps({"seconds": time.perf_counter() - start, "inertia": float(km.inertia_), "iterations": int(km.n_iter_)}))
