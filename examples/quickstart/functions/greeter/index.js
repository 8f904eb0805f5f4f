// greeter: answers `commands/greet` messages sent down from the cloud.
// Payload: {"name": "Ada"}; result: {"greeting": "Hello, Ada!"}.

exports.handler = async (event, context) => {
  const name = (event.payload && event.payload.name) || "world";
  return { greeting: `Hello, ${name}!` };
};
