"""ConfigMaps and Secrets: configuration a pod consumes as environment variables and files."""
