import VMSwarmCLI

await VMSwarm.runFromCommandLine()
