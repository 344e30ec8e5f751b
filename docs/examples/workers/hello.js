// A stand-in Worker for the how-to: answers with the greeting its binding holds.
export default {
  async fetch(request, env) {
    return new Response(`${env.GREETING} from ${new URL(request.url).hostname}\n`);
  },
};
