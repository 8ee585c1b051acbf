"""clustering: the clustering service: clustering models, experiments and cluster assignment."""
