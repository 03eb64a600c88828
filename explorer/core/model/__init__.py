"""Model & data: spec strings -> modules (zoo, nets) and datasets (data); prunable layers and MACs (layers);
parameter, nonzero and storage counting (metrics)."""
