// The announce client lands in its own commit.
