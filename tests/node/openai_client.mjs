// Drives `qwen2audio serve` with the official OpenAI JS client: models, chat completions with
// input_audio (whole and streamed) and a transcription. Prints what the client parsed as one JSON
// object; tests/python/test_server.py checks it against the server's plain HTTP answers.
// Usage: node openai_client.mjs BASE_URL MODEL WAV_FILE
import fs from "node:fs";
import OpenAI from "openai";

const [baseURL, model, wavPath] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 120_000 });
const audio = fs.readFileSync(wavPath).toString("base64");
const messages = [
  {
    role: "user",
    content: [
      { type: "input_audio", input_audio: { data: audio, format: "wav" } },
      { type: "text", text: "What is in this clip?" },
    ],
  },
];

const models = await client.models.list();
const completion = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });

const stream = await client.chat.completions.create({
  model,
  messages,
  max_tokens: 8,
  temperature: 0,
  stream: true,
  stream_options: { include_usage: true },
});
let streamed = "";
let chunks = 0;
let finishReason = null;
let usage = null;
for await (const chunk of stream) {
  chunks += 1;
  if (chunk.choices.length > 0) {
    streamed += chunk.choices[0].delta.content ?? "";
    finishReason = chunk.choices[0].finish_reason ?? finishReason;
  }
  if (chunk.usage) usage = chunk.usage;
}

const transcription = await client.audio.transcriptions.create({
  file: fs.createReadStream(wavPath),
  model,
  language: "en",
});

console.log(
  JSON.stringify({
    models: models.data.map((entry) => entry.id),
    completion: {
      object: completion.object,
      id: completion.id,
      content: completion.choices[0].message.content,
      role: completion.choices[0].message.role,
      finish_reason: completion.choices[0].finish_reason,
      usage: completion.usage,
    },
    stream: { content: streamed, chunks, finish_reason: finishReason, usage },
    transcription: transcription.text,
  }),
);
