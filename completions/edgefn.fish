# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_edgefn_global_optspecs
    string join \n h/help V/version
end

function __fish_edgefn_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_edgefn_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_edgefn_using_subcommand
    set -l cmd (__fish_edgefn_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c edgefn -n "__fish_edgefn_needs_command" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_needs_command" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "init" -d 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "new" -d 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "dev" -d 'Run the project locally: a control plane, a broker and one agent per device, re-applied on every change'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "validate" -d 'Check edgefn.yaml (and the functions\' test cases) and report every problem found'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "test" -d 'Run the functions\' test cases (functions/*/tests/*.yaml), or simulate one message on a device'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "invoke" -d 'Call a function once with an event, and print its result: here, or on a device'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "package" -d 'Package each function into a reproducible bundle named by its sha256'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "apply" -d 'Validate, package, upload what the cloud lacks, and submit a new revision'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "diff" -d 'Show what applying would change on each device (exit 0: none, 2: changes, 1: error)'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "status" -d 'Show the fleet: desired and running revision, state and errors of each device'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "history" -d 'List the revisions applied, newest first, with where they came from'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "rollback" -d 'Apply an earlier revision again, as a new revision (default: the one before the latest)'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "keygen" -d 'Make an ed25519 key to sign revisions with; prints the public key for agents\' trustedKeys'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "device" -d 'Register, list and remove devices'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "token" -d 'Create, list and revoke admin tokens (one per person or CI job; revoke a leaked one)'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "secret" -d 'Set, list and remove secrets: values functions read as files, kept encrypted by the control plane, never in git'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "rollout" -d 'Follow and steer the latest revision\'s progressive rollout (`rollout:` in the manifest)'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "login" -d 'Save the control plane\'s URL and an admin token for later commands'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "publish" -d 'Send a message to devices, on their local topic (through the cloud\'s MQTT broker)'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "subscribe" -d 'Print what devices send up to the cloud (`device topic payload` lines) until Ctrl-C'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "logs" -d 'Show a device\'s function log lines (the last ones kept by the cloud), and follow new ones'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c edgefn -n "__fish_edgefn_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgefn -n "__fish_edgefn_using_subcommand init" -l name -d 'Project name (default: the folder\'s name)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand init" -l force -d 'Overwrite files that already exist'
complete -c edgefn -n "__fish_edgefn_using_subcommand init" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand init" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -s r -l runtime -d 'Language runtime of the function' -r -f -a "python3\t'Python 3: `handle(event, context)` in main.py'
node\t'Node.js: `exports.handler` in index.js'
exec\t'Any executable that speaks the invocation protocol'"
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -s f -l file -d 'The manifest to add the function to (default: edgefn.yaml here or in a parent folder)' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -l trigger -d 'Also bind it, triggered by messages on this topic filter (repeatable)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -l label -d 'With --trigger or --continuous: bind it to the devices with this label `key=value` (repeatable; default: every device)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -l force -d 'Overwrite the function\'s files if they exist'
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -l continuous -d 'Also bind it as a continuous function (one instance, restarted when it exits)'
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand new" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand dev" -l device -d 'Run only these devices of the manifest (default: all)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand dev" -l sandbox -d 'Where functions run' -r -f -a "process\t'A process group with rlimits'
container\t'A container with cgroup limits (root on Linux)'
auto\t'Container where possible, else process'"
complete -c edgefn -n "__fish_edgefn_using_subcommand dev" -l listen -d 'Address of the local control plane' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand dev" -l once -d 'Stop after applying and starting the devices once (for scripts and checks)'
complete -c edgefn -n "__fish_edgefn_using_subcommand dev" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand dev" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand validate" -s f -l file -d 'The manifest (default: edgefn.yaml here or in a parent folder)' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand validate" -l format -d 'How to print problems' -r -f -a "human\t'Source snippets with labels, for people'
short\t'One `file:line:col: severity[code]: message` line each, for editors and grep'
json\t'A JSON document, for programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand validate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand validate" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand test" -s f -l file -d 'The manifest (default: edgefn.yaml here or in a parent folder)' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand test" -l sandbox -d 'Where functions run' -r -f -a "process\t'A process group with rlimits'
container\t'A container with cgroup limits (root on Linux)'
auto\t'Container where possible, else process'"
complete -c edgefn -n "__fish_edgefn_using_subcommand test" -l junit -d 'Also write the results as JUnit XML to this file' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand test" -l topic -d 'Simulate one message on this topic instead of running the cases' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand test" -l payload -d 'The simulated message\'s payload (JSON, or else text)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand test" -l device -d 'The device the simulated message arrives on (default: every device)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand test" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand test" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand invoke" -l event -d 'The event\'s payload (JSON, or else text; `@FILE` reads it from a file)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand invoke" -l topic -d 'The event\'s topic' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand invoke" -l device -d 'Run it on this registered device, through the control plane: the function (or binding) its current desired state runs there, with the logs it wrote' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand invoke" -l timeout -d 'With --device: how long to wait for the device\'s answer (at most 60s)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand invoke" -l as-device -d 'Run it here as on this device of the manifest (its binding\'s settings and its values in `env`; default: the first device its first binding selects)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand invoke" -s f -l file -d 'The manifest (default: edgefn.yaml here or in a parent folder)' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand invoke" -l sandbox -d 'Where the function runs' -r -f -a "process\t'A process group with rlimits'
container\t'A container with cgroup limits (root on Linux)'
auto\t'Container where possible, else process'"
complete -c edgefn -n "__fish_edgefn_using_subcommand invoke" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand invoke" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand invoke" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand invoke" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand package" -s f -l file -d 'The manifest (default: edgefn.yaml here or in a parent folder)' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand package" -l out -d 'Write the bundles to this folder as `<sha256>.tar.zst`' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand package" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand package" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand package" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -s f -l file -d 'The manifest (default: edgefn.yaml here or in a parent folder)' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -l timeout -d 'How long `--wait` waits before failing' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -l sign-key -d 'Sign what each device will run with this ed25519 key (PKCS#8 PEM, from `edgefn keygen`); default: the file named by EDGEFN_SIGN_KEY_FILE, if set' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -l rollout -d '`none`: every device takes the revision at once, whatever the manifest\'s `rollout:` says (default: as the manifest says)' -r -f -a "none\t'No rollout: every device at once'"
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -l allow-dirty -d 'Apply even with uncommitted changes (the revision records that it was dirty)'
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -l force -d 'Apply even when it undoes a rollback made with `edgefn rollback` (by applying the commit that was rolled back, or an older one)'
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -l wait -d 'Follow the rollout until every registered device runs the new revision (with a progressive rollout: through its stages; exit 1 when it halts or is aborted)'
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand apply" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand diff" -s f -l file -d 'The manifest (default: edgefn.yaml here or in a parent folder)' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand diff" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand diff" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand diff" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand diff" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand status" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand status" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand status" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand status" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand history" -l limit -d 'How many revisions' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand history" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand history" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand history" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand history" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand history" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollback" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollback" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollback" -l timeout -d 'How long `--wait` waits before failing' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollback" -l sign-key -d 'Sign the new revision\'s desired states with this ed25519 key (as `edgefn apply --sign-key`); default: the file named by EDGEFN_SIGN_KEY_FILE, if set' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand rollback" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand rollback" -l wait -d 'Follow the rollout until every registered device runs it'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollback" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollback" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand keygen" -l out -d 'Where to write the private key (mode 0600; default: ~/.config/edgefn/signing.key)' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand keygen" -l force -d 'Overwrite the file if it exists (the old key is lost)'
complete -c edgefn -n "__fish_edgefn_using_subcommand keygen" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand keygen" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -f -a "add" -d 'Register a device and write the one file its agent needs (cloud URL, name, token)'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -f -a "list" -d 'List registered devices'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -f -a "remove" -d 'Remove a device and revoke its token'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from add" -l label -d 'A label `key=value`, added with the device to edgefn.yaml (repeatable)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from add" -l out -d 'Where to write the agent\'s configuration (it holds the token: mode 0600). Default: `devices/NAME.yaml` beside the saved login (`~/.config/edgefn/`), outside the project; a file inside a git work tree is added to its `.gitignore`' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from add" -s f -l file -d 'The manifest to add the device to (default: edgefn.yaml here or in a parent folder, if any)' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from add" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from add" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from add" -l force -d 'Overwrite the output file'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from list" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from list" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from list" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from remove" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from remove" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from help" -f -a "add" -d 'Register a device and write the one file its agent needs (cloud URL, name, token)'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from help" -f -a "list" -d 'List registered devices'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a device and revoke its token'
complete -c edgefn -n "__fish_edgefn_using_subcommand device; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -f -a "create" -d 'Create an admin token and print it, once (the control plane keeps only its hash)'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -f -a "list" -d 'List the admin tokens: ids, names, when created, and which one you use; never a token'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -f -a "revoke" -d 'Revoke an admin token at once (not the last one: create another first)'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from create" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from create" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from create" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from list" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from list" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from list" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from revoke" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from revoke" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from revoke" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create an admin token and print it, once (the control plane keeps only its hash)'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the admin tokens: ids, names, when created, and which one you use; never a token'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'Revoke an admin token at once (not the last one: create another first)'
complete -c edgefn -n "__fish_edgefn_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and not __fish_seen_subcommand_from set list rm help" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and not __fish_seen_subcommand_from set list rm help" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and not __fish_seen_subcommand_from set list rm help" -f -a "set" -d 'Set a new version of a secret (the value from stdin, or --from-file); when the latest revision uses it, a new revision rolls it out'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and not __fish_seen_subcommand_from set list rm help" -f -a "list" -d 'List the secrets: names, versions, when set, which functions and bindings use them; never a value'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and not __fish_seen_subcommand_from set list rm help" -f -a "rm" -d 'Remove a secret\'s values (refused while the latest revision uses it)'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and not __fish_seen_subcommand_from set list rm help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from set" -l from-file -d 'Read the value from this file (its exact bytes) instead of stdin' -r -F
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from set" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from set" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from set" -l timeout -d 'How long `--wait` waits before failing' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from set" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from set" -l wait -d 'Follow the rollout the new version starts until every registered device runs it'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from set" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from set" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from list" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from list" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from list" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from rm" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from rm" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from rm" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from help" -f -a "set" -d 'Set a new version of a secret (the value from stdin, or --from-file); when the latest revision uses it, a new revision rolls it out'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the secrets: names, versions, when set, which functions and bindings use them; never a value'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from help" -f -a "rm" -d 'Remove a secret\'s values (refused while the latest revision uses it)'
complete -c edgefn -n "__fish_edgefn_using_subcommand secret; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and not __fish_seen_subcommand_from status pause resume abort help" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and not __fish_seen_subcommand_from status pause resume abort help" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and not __fish_seen_subcommand_from status pause resume abort help" -f -a "status" -d 'Show the rollout: state, stage, and each device\'s stage and state'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and not __fish_seen_subcommand_from status pause resume abort help" -f -a "pause" -d 'Hold the rollout at its stage until resumed (nothing advances, nothing halts)'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and not __fish_seen_subcommand_from status pause resume abort help" -f -a "resume" -d 'Continue a paused rollout (its stage\'s deadline and bake time start again)'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and not __fish_seen_subcommand_from status pause resume abort help" -f -a "abort" -d 'End the rollout: every device goes back to the baseline revision'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and not __fish_seen_subcommand_from status pause resume abort help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from status" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from status" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from status" -l timeout -d 'How long `--wait` waits before failing' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from status" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from status" -l wait -d 'Then follow the rollout to its end (exit 1 unless it completes)'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from pause" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from pause" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from pause" -l timeout -d 'How long `--wait` waits before failing' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from pause" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from pause" -l wait -d 'Then follow the rollout to its end (exit 1 unless it completes)'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from pause" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from pause" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from resume" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from resume" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from resume" -l timeout -d 'How long `--wait` waits before failing' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from resume" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from resume" -l wait -d 'Then follow the rollout to its end (exit 1 unless it completes)'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from resume" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from resume" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from abort" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from abort" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from abort" -l timeout -d 'How long `--wait` waits before failing' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from abort" -l output -d 'Output format' -r -f -a "text\t'For people'
json\t'For programs'"
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from abort" -l wait -d 'Then follow the rollout to its end (exit 1 unless it completes)'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from abort" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from abort" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show the rollout: state, stage, and each device\'s stage and state'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from help" -f -a "pause" -d 'Hold the rollout at its stage until resumed (nothing advances, nothing halts)'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from help" -f -a "resume" -d 'Continue a paused rollout (its stage\'s deadline and bake time start again)'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from help" -f -a "abort" -d 'End the rollout: every device goes back to the baseline revision'
complete -c edgefn -n "__fish_edgefn_using_subcommand rollout; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgefn -n "__fish_edgefn_using_subcommand login" -l cloud -d 'Control plane URL' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand login" -l token -d 'Admin token (default: read from standard input, so it stays out of the shell history)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand login" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand login" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand publish" -l label -d 'Send to every device of the latest manifest with this label `key=value` (repeatable: all must match) instead of one device' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand publish" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand publish" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand publish" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand publish" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand subscribe" -l count -d 'Exit after this many messages' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand subscribe" -l reconnect-for -d 'When the control plane goes away, how long to keep trying to reconnect before failing' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand subscribe" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand subscribe" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand subscribe" -l json -d 'Print each message as a JSON object (device, topic, payload, ts_ms)'
complete -c edgefn -n "__fish_edgefn_using_subcommand subscribe" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand subscribe" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand logs" -l tail -d 'How many of the last lines to show first (the cloud keeps 1000 per device)' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand logs" -l reconnect-for -d 'With --follow: when the control plane goes away, how long to keep trying to reconnect' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand logs" -l cloud -d 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand logs" -l token -d 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]' -r
complete -c edgefn -n "__fish_edgefn_using_subcommand logs" -s f -l follow -d 'Keep printing new lines as they arrive, until Ctrl-C'
complete -c edgefn -n "__fish_edgefn_using_subcommand logs" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand logs" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand completions" -s h -l help -d 'Print help'
complete -c edgefn -n "__fish_edgefn_using_subcommand completions" -s V -l version -d 'Print version'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "init" -d 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "new" -d 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "dev" -d 'Run the project locally: a control plane, a broker and one agent per device, re-applied on every change'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "validate" -d 'Check edgefn.yaml (and the functions\' test cases) and report every problem found'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "test" -d 'Run the functions\' test cases (functions/*/tests/*.yaml), or simulate one message on a device'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "invoke" -d 'Call a function once with an event, and print its result: here, or on a device'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "package" -d 'Package each function into a reproducible bundle named by its sha256'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "apply" -d 'Validate, package, upload what the cloud lacks, and submit a new revision'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "diff" -d 'Show what applying would change on each device (exit 0: none, 2: changes, 1: error)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "status" -d 'Show the fleet: desired and running revision, state and errors of each device'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "history" -d 'List the revisions applied, newest first, with where they came from'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "rollback" -d 'Apply an earlier revision again, as a new revision (default: the one before the latest)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "keygen" -d 'Make an ed25519 key to sign revisions with; prints the public key for agents\' trustedKeys'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "device" -d 'Register, list and remove devices'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "token" -d 'Create, list and revoke admin tokens (one per person or CI job; revoke a leaked one)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "secret" -d 'Set, list and remove secrets: values functions read as files, kept encrypted by the control plane, never in git'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "rollout" -d 'Follow and steer the latest revision\'s progressive rollout (`rollout:` in the manifest)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "login" -d 'Save the control plane\'s URL and an admin token for later commands'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "publish" -d 'Send a message to devices, on their local topic (through the cloud\'s MQTT broker)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "subscribe" -d 'Print what devices send up to the cloud (`device topic payload` lines) until Ctrl-C'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "logs" -d 'Show a device\'s function log lines (the last ones kept by the cloud), and follow new ones'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "completions" -d 'Print a shell completion script'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and not __fish_seen_subcommand_from init new dev validate test invoke package apply diff status history rollback keygen device token secret rollout login publish subscribe logs completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from device" -f -a "add" -d 'Register a device and write the one file its agent needs (cloud URL, name, token)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from device" -f -a "list" -d 'List registered devices'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from device" -f -a "remove" -d 'Remove a device and revoke its token'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from token" -f -a "create" -d 'Create an admin token and print it, once (the control plane keeps only its hash)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from token" -f -a "list" -d 'List the admin tokens: ids, names, when created, and which one you use; never a token'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from token" -f -a "revoke" -d 'Revoke an admin token at once (not the last one: create another first)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from secret" -f -a "set" -d 'Set a new version of a secret (the value from stdin, or --from-file); when the latest revision uses it, a new revision rolls it out'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from secret" -f -a "list" -d 'List the secrets: names, versions, when set, which functions and bindings use them; never a value'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from secret" -f -a "rm" -d 'Remove a secret\'s values (refused while the latest revision uses it)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from rollout" -f -a "status" -d 'Show the rollout: state, stage, and each device\'s stage and state'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from rollout" -f -a "pause" -d 'Hold the rollout at its stage until resumed (nothing advances, nothing halts)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from rollout" -f -a "resume" -d 'Continue a paused rollout (its stage\'s deadline and bake time start again)'
complete -c edgefn -n "__fish_edgefn_using_subcommand help; and __fish_seen_subcommand_from rollout" -f -a "abort" -d 'End the rollout: every device goes back to the baseline revision'
