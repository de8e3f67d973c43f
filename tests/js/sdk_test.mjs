// Drives the official `openai` npm SDK against a running audiorouter with only baseURL swapped, and prints
// what came back as one JSON object on stdout; tests/test_sdk_openai.py (test_openai_npm_sdk) checks it.
// Usage: AUDIOROUTER_URL=http://127.0.0.1:8000 node sdk_test.mjs <english audio> <foreign audio> <out dir>
import fs from "fs";
import path from "path";
import OpenAI, { toFile } from "openai";

const [english, foreign, outDir] = process.argv.slice(2);
const client = new OpenAI({
  baseURL: `${process.env.AUDIOROUTER_URL}/v1`,
  apiKey: "sk-test",
  maxRetries: 0,
  timeout: 300_000,
});
const out = {};

const json = await client.audio.transcriptions.create({
  model: "openai/whisper-large-v3",
  file: fs.createReadStream(english),
});
out.json = { text: json.text, usage: json.usage ?? null };

const text = await client.audio.transcriptions.create({
  model: "openai/whisper-large-v3",
  file: fs.createReadStream(english),
  response_format: "text",
});
out.text = text;

const verbose = await client.audio.transcriptions.create({
  model: "openai/whisper-1",
  file: fs.createReadStream(english),
  response_format: "verbose_json",
  timestamp_granularities: ["word"],
});
out.verbose = { text: verbose.text, language: verbose.language, duration: verbose.duration, words: verbose.words };

const translation = await client.audio.translations.create({
  model: "openai/whisper-1",
  file: fs.createReadStream(foreign),
});
out.translation = translation.text;

const speech = await client.audio.speech.create({
  model: "openai/tts-1-hd",
  voice: "nova",
  input: "Hello! Welcome to the universal audio gateway.",
});
out.speech_content_type = speech.headers.get("content-type");
const mp3 = Buffer.from(await speech.arrayBuffer());
fs.writeFileSync(path.join(outDir, "output.mp3"), mp3);
out.speech_bytes = mp3.length;

// the synthesized speech back through transcription, uploaded from memory with toFile
const wav = Buffer.from(await (await client.audio.speech.create({
  model: "openai/tts-1", voice: "alloy", input: "Please call me back tomorrow morning.", response_format: "wav",
})).arrayBuffer());
const back = await client.audio.transcriptions.create({
  model: "openai/whisper-1",
  file: await toFile(wav, "speech.wav", { type: "audio/wav" }),
});
out.round_trip = back.text;

try {
  await client.audio.speech.create({ model: "openai/tts-1", voice: "no-such-voice", input: "hi" });
  out.bad_voice = { status: 200 };
} catch (e) {
  out.bad_voice = { status: e.status, param: e.param ?? e.error?.param ?? null, name: e.constructor.name };
}

const ids = [];
for await (const m of client.models.list()) ids.push(m.id);
out.models = ids;

console.log(JSON.stringify(out));
