// Starts kinesalite (the Kinesis emulator) for one local Riffle run.
//
// Usage: node kinesalite.js <port> <state-dir>
//   port       0 picks any free port; restarts pass the previous port back so clients keep it.
//   state-dir  LevelDB directory: acknowledged records survive a restart of this process.
//
// Why a wrapper and not kinesalite's CLI: the CLI listens on every interface; this binds
// 127.0.0.1 only. It prints `READY <port>` once listening so the parent needs no polling,
// and it exits when its stdin closes, so it never outlives the process that started it.
'use strict'

const path = require('path')
const toolsNode = process.env.RIFFLE_TOOLS_NODE ||
  path.join(__dirname, '..', '..', '.riffle', 'tools', 'node', 'node_modules')
const kinesalite = require(path.join(toolsNode, 'kinesalite'))

const port = Number.parseInt(process.argv[2] || '0', 10)
const stateDir = process.argv[3]
if (!Number.isInteger(port) || port < 0 || port > 65535 || !stateDir) {
  console.error('usage: node kinesalite.js <port> <state-dir>')
  process.exit(2)
}

const server = kinesalite({
  path: stateDir,
  // Local streams are usable at once; waiting out CREATING only slows tests down.
  createStreamMs: 0,
  deleteStreamMs: 0,
  updateStreamMs: 0,
  // The default of 10 shards is below what the platform template and load tests create.
  shardLimit: 1000,
})

server.on('error', (err) => {
  console.error(`kinesalite: ${err.message}`)
  process.exit(1)
})

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${server.address().port}\n`)
})

let stopping = false
function stop() {
  if (stopping) return
  stopping = true
  // Closing the server closes LevelDB, which flushes what was acknowledged.
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 3000).unref()
}
process.stdin.on('end', stop)
process.stdin.on('close', stop)
process.stdin.resume()
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
