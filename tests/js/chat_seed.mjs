// The seeds' TypeScript audio-chat example (ARouter's docs, "Audio Chat"), verbatim but for the base URL, which
// comes from AUDIOROUTER_URL; tests/test_chat.py (test_seed_typescript_audio_in) runs it with question.wav in cwd.
import OpenAI from "openai";
const client = new OpenAI({
baseURL: `${process.env.AUDIOROUTER_URL}/v1`,
apiKey: "lr_live_xxxx",
});
import fs from "fs";
const audioData = fs.readFileSync("question.wav").toString("base64");
const response = await client.chat.completions.create({
model: "openai/gpt-5.4-audio-preview",
messages: [
{
role: "user",
content: [
{
type: "input_audio",
input_audio: {
data: audioData,
format: "wav",
},
},
],
},
],
});
console.log(response.choices[0].message.content);
