from mlflow_ci.cli import main

if __name__ == "__main__":  # pragma: no cover - exercised through `python -m mlflow_ci`
    main()
