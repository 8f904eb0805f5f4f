// greeter: answers `commands/greet` messages sent down from the cloud.
// Payload: {"name": "Ada"}; result: {"greeting": "Hello, Ada!"}, also published on
// `greetings/<name>`, which a route sends up to the cloud.

exports.handler = async (event, context) => {
  const name = (event.payload && event.payload.name) || "world";
  const greeting = `Hello, ${name}!`;
  context.publish(`greetings/${name.toLowerCase()}`, { greeting, device: context.device });
  return { greeting };
};
