import VMSwarmCLI
VMSwarm.main()
