"""MPO (Abdolmaleki et al. 2018) in pure torch: networks, losses, learner, and checkpoint -> policy loading."""
