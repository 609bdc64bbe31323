"""Default-settings accuracy: fastbp.MLPClassifier() against scikit-learn's MLPClassifier().

Unscaled breast_cancer, iris, wine and digits; stratified 75/25 splits with seeds 0..4; the
mean test accuracy of each. Run: ``python benchmarks/sklearn_accuracy.py``.
"""

import sys
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SklearnMLP

import fastbp

SETS = {"breast_cancer": load_breast_cancer, "iris": load_iris, "wine": load_wine,
        "digits": load_digits}


def main(seeds=5, **fastbp_params):
    warnings.simplefilter("ignore", ConvergenceWarning)
    print("| data set | scikit-learn MLPClassifier() | fastbp.MLPClassifier() |")
    print("|---|---|---|")
    for name, load in SETS.items():
        X, y = load(return_X_y=True)
        scores = {"sklearn": [], "fastbp": []}
        for seed in range(seeds):
            split = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
            X_train, X_test, y_train, y_test = split
            for key, make in (("sklearn", SklearnMLP),
                              ("fastbp", lambda **kw: fastbp.MLPClassifier(**kw,
                                                                           **fastbp_params))):
                model = make(random_state=seed).fit(X_train, y_train)
                scores[key].append(model.score(X_test, y_test))
        print(f"| {name} | {np.mean(scores['sklearn']):.3f} | {np.mean(scores['fastbp']):.3f} |")


if __name__ == "__main__":
    main(**({"preprocess": None} if "--raw" in sys.argv else {}))
