"""`convostore webhook`: the Kubernetes injection webhook (AdmissionReview in, JSONPatch out)."""
