/*!
The metalogger: keeps restorable copies of the master's metadata (snapshot + changelog).

Status: reserved for the metalogger issue; nothing here is used yet.
*/
