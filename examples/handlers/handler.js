#!/usr/bin/env node
// A streamfleet handler in Node (handler = subprocess): one long-lived process.
// Each message comes as one JSON line on stdin: {id, stream, attempt, fields}; answer each
// with one JSON line on stdout, in any order: {id, result: "ack" | "retry" | "dead",
// reason, error, retry_after}. A value that is not UTF-8 comes as {"$base64": "..."}.
// Config: handler = subprocess, command = node /srv/handler.js
'use strict';
const fs = require('fs');
const readline = require('readline');

const SENT_LOG = process.env.SENT_LOG; // given with env = SENT_LOG=/path

const value = (v) => (typeof v === 'object' ? Buffer.from(v.$base64, 'base64') : v);

async function handle(fields) {
  if (!('to' in fields)) return { result: 'dead', reason: 'no_recipient', error: "no 'to' field" };
  // the work: here, note the recipient (a real handler sends the email, asynchronously)
  if (SENT_LOG) await fs.promises.appendFile(SENT_LOG, fields.to + '\n');
  return { result: 'ack' };
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const msg = JSON.parse(line);
  let answer;
  try {
    const fields = Object.fromEntries(Object.entries(msg.fields).map(([k, v]) => [k, value(v)]));
    answer = await handle(fields);
  } catch (e) { // a bug or an outage: try again in a minute
    answer = { result: 'retry', error: String(e).slice(0, 200), retry_after: 60 };
  }
  process.stdout.write(JSON.stringify({ id: msg.id, ...answer }) + '\n');
});
