<?php
// vessel-sync test kit: sets up a freshly installed Moodle for the real-Moodle tests through
// Moodle's own API. Copied into the code root of a throwaway install; never shipped.
//   php vessel_test_helper.php setup FUNCTION...   external services and tokens, as JSON
//   php vessel_test_helper.php token USERNAME      a token on the test service for that user
//   php vessel_test_helper.php service NAME FUNCTION...  a service with those functions, the admin's token on it
define('CLI_SCRIPT', true);
require(__DIR__ . '/config.php');
require_once($CFG->libdir . '/accesslib.php');

$verb = $argv[1] ?? '';
$system = context_system::instance();

function service_id(string $shortname, array $functions): int {
    global $DB;
    $id = $DB->get_field('external_services', 'id', ['shortname' => $shortname]);
    if (!$id) {
        $id = $DB->insert_record('external_services', (object) [
            'name' => $shortname, 'shortname' => $shortname, 'enabled' => 1,
            'restrictedusers' => 0, 'downloadfiles' => 0, 'uploadfiles' => 0,
            'timecreated' => time(), 'timemodified' => time(),
        ]);
    }
    foreach ($functions as $f) {
        if (!$DB->record_exists('external_services_functions', ['externalserviceid' => $id, 'functionname' => $f])) {
            $DB->insert_record('external_services_functions', (object) ['externalserviceid' => $id, 'functionname' => $f]);
        }
    }
    return (int) $id;
}

function token_for(int $serviceid, string $username): string {
    global $DB;
    $user = $DB->get_record('user', ['username' => $username, 'deleted' => 0], '*', MUST_EXIST);
    $service = \core_external\util::get_service_by_id($serviceid);
    return \core_external\util::generate_token(EXTERNAL_TOKEN_PERMANENT, $service, (int) $user->id,
        context_system::instance(), 0, '', 'vessel-sync test');
}

if ($verb === 'setup') {
    $agent = service_id('vessel_sync', array_slice($argv, 2));
    $all = $DB->get_fieldset_select('external_functions', 'name', '1 = 1');
    $test = service_id('vessel_test', $all);
    // Learners and teachers call the web services in the tests as they would from the app.
    assign_capability('webservice/rest:use', CAP_ALLOW, $CFG->defaultuserroleid, $system->id, true);
    $system->mark_dirty();
    echo json_encode([
        'agent_token' => token_for($agent, 'admin'),
        'admin_token' => token_for($test, 'admin'),
    ]), "\n";
} else if ($verb === 'service') {
    // A service holding exactly the functions named, and the admin's token on it.
    $id = service_id($argv[2], array_slice($argv, 3));
    echo token_for($id, 'admin'), "\n";
} else if ($verb === 'token') {
    $id = (int) $DB->get_field('external_services', 'id', ['shortname' => 'vessel_test'], MUST_EXIST);
    echo token_for($id, $argv[2]), "\n";
} else {
    fwrite(STDERR, "usage: php vessel_test_helper.php setup FUNCTION... | token USERNAME\n");
    exit(2);
}
