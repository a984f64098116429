// Hello world: forwards every record unchanged to the route's default
// target.
import { Message, Output, route } from "switchyard-sdk";

export default route((_msg: Message): Output[] => [Output.forward()]);
